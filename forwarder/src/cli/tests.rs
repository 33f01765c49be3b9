use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn env() -> Environment {
    Environment {
        home: Some(PathBuf::from("/home/tester")),
        user: Some("tester".into()),
        cache_home: None,
    }
}

fn parse(args: &[&str]) -> Result<Command, CliError> {
    parse_args_with_env(args.iter().copied(), &env())
}

fn run(args: &[&str]) -> Options {
    match parse(args) {
        Ok(Command::Run(o)) => o,
        other => panic!("{args:?} gave {other:?}"),
    }
}

fn err(args: &[&str]) -> String {
    match parse(args) {
        Err(e) => e.to_string(),
        other => panic!("{args:?} should fail, gave {other:?}"),
    }
}

fn fwd(bind: Option<&str>, port: u16, host: &str, host_port: u16) -> ForwardSpec {
    ForwardSpec::tcp(bind, port, host, host_port)
}

#[test]
fn the_issue_command_line() {
    let o = run(&[
        "-N",
        "-p",
        "2222",
        "-i",
        "~/.ssh/id_rsa",
        "-o",
        "UserKnownHostsFile=./known_hosts",
        "-L",
        "15432:db.internal:5432",
        "analytics@bastion.example.com",
    ]);
    assert_eq!(o.destination_host, "bastion.example.com");
    assert_eq!(o.original_host, "bastion.example.com");
    assert_eq!(o.port, 2222);
    assert_eq!(o.user, "analytics");
    assert_eq!(
        o.identity_files,
        vec![PathBuf::from("/home/tester/.ssh/id_rsa")]
    );
    assert!(!o.default_identity_files);
    assert_eq!(
        o.user_known_hosts_files,
        vec![PathBuf::from("./known_hosts")]
    );
    assert_eq!(
        o.known_hosts_record_file(),
        Some(std::path::Path::new("./known_hosts"))
    );
    assert_eq!(
        o.local_forwards,
        vec![fwd(None, 15432, "db.internal", 5432)]
    );
    assert_eq!(
        o.local_forwards[0].listen.bind_target(o.gateway_ports),
        Some(BindTarget::Loopback)
    );
    assert_eq!(o.strict_host_key_checking, StrictHostKeyChecking::Yes);
    assert!(o.warnings.is_empty());
}

#[test]
fn defaults_come_from_the_environment() {
    let o = run(&["bastion"]);
    assert_eq!(o.user, "tester");
    assert_eq!(o.port, 22);
    assert!(o.default_identity_files);
    assert_eq!(
        o.identity_files,
        vec![
            PathBuf::from("/home/tester/.ssh/id_ed25519"),
            PathBuf::from("/home/tester/.ssh/id_rsa")
        ]
    );
    // ssh's defaults: two user files, the first one written to, and two global ones.
    assert_eq!(
        o.user_known_hosts_files,
        vec![
            PathBuf::from("/home/tester/.ssh/known_hosts"),
            PathBuf::from("/home/tester/.ssh/known_hosts2")
        ]
    );
    assert_eq!(
        o.global_known_hosts_files,
        vec![
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2")
        ]
    );
    assert_eq!(
        o.known_hosts_record_file(),
        Some(std::path::Path::new("/home/tester/.ssh/known_hosts"))
    );
    assert_eq!(o.log_level, LogLevel::Info);
    assert_eq!(o.strict_host_key_checking, StrictHostKeyChecking::Yes);
    assert_eq!(o.connect_timeout, None);
    // Keepalives on by default (unlike ssh), so a dead session is noticed.
    assert_eq!(o.server_alive_interval, Some(Duration::from_secs(15)));
    assert_eq!(o.server_alive_count_max, 3);
    assert!(o.reconnect && o.tcp_keep_alive);
    assert_eq!(o.reconnect_backoff_max, Duration::from_secs(30));
    assert_eq!(o.session_wait_timeout, Duration::from_secs(60));
    assert!(!o.exit_on_forward_failure && !o.batch_mode && !o.compression);
    assert!(!o.gateway_ports && !o.hash_known_hosts);
    assert_eq!(o.address_family, AddressFamily::Any);
    assert_eq!(o.ciphers, None);
    assert_eq!(o.rekey_limit, None);
    assert!(o.local_forwards.is_empty());
}

#[test]
fn missing_user_and_home_are_explained() {
    let no_user = Environment {
        home: Some("/h".into()),
        user: None,
        cache_home: None,
    };
    let e = parse_args_with_env(["host"], &no_user);
    assert_eq!(e, Err(CliError::NoUser));
    assert!(
        e.err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("-l user")
    );
    // A user from the command line is enough.
    assert!(matches!(
        parse_args_with_env(["u@host"], &no_user),
        Ok(Command::Run(_))
    ));
    let no_home = Environment {
        home: None,
        user: Some("me".into()),
        cache_home: None,
    };
    let e = parse_args_with_env(["host"], &no_home);
    assert_eq!(
        e.err().map(|e| e.to_string()).as_deref(),
        Some("cannot expand '~' in '~/.ssh/id_ed25519': $HOME is not set; give the full path")
    );
    let ok = parse_args_with_env(
        ["-i", "/k", "-o", "UserKnownHostsFile=/kh", "host"],
        &no_home,
    );
    assert!(matches!(ok, Ok(Command::Run(_))), "{ok:?}");
}

#[test]
fn the_kex_guess_file_is_a_cache_under_the_home_or_xdg_cache_home_unless_none() {
    assert_eq!(
        run(&["host"]).kex_guess_file,
        Some(PathBuf::from("/home/tester/.cache/forwarder/kex_firsts"))
    );
    let xdg = Environment {
        cache_home: Some(PathBuf::from("/var/cache/me")),
        ..env()
    };
    match parse_args_with_env(["host"], &xdg) {
        Ok(Command::Run(o)) => assert_eq!(
            o.kex_guess_file,
            Some(PathBuf::from("/var/cache/me/forwarder/kex_firsts"))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run(&["-o", "KexGuessFile=~/kex", "host"]).kex_guess_file,
        Some(PathBuf::from("/home/tester/kex"))
    );
    assert_eq!(
        run(&["-o", "KexGuessFile none", "host"]).kex_guess_file,
        None
    );
    // No home and no cache directory: the choices stay in memory, the run goes on.
    let no_home = Environment {
        home: None,
        user: Some("me".into()),
        cache_home: None,
    };
    match parse_args_with_env(
        ["-i", "/k", "-o", "UserKnownHostsFile=/kh", "host"],
        &no_home,
    ) {
        Ok(Command::Run(o)) => assert_eq!(o.kex_guess_file, None),
        other => panic!("{other:?}"),
    }
    assert!(err(&["-o", "KexGuessFile", "host"]).contains("KexGuessFile"));
}

#[test]
fn grouped_flags_and_attached_values() {
    let o = run(&["-Nvp2222", "host"]);
    assert_eq!((o.port, o.log_level), (2222, LogLevel::Debug1));
    let o = run(&["-vvv", "host"]);
    assert_eq!(o.log_level, LogLevel::Debug3);
    assert_eq!(o.log_level.verbosity(), 3);
    let o = run(&["-vvvvvv", "host"]);
    assert_eq!(o.log_level, LogLevel::Debug3);
    let o = run(&["-Nv", "-v", "host"]);
    assert_eq!(o.log_level, LogLevel::Debug2);
    let o = run(&["-L15432:db:5432", "-lalice", "-oPort=7", "host"]);
    assert_eq!(o.local_forwards, vec![fwd(None, 15432, "db", 5432)]);
    assert_eq!((o.user.as_str(), o.port), ("alice", 7));
    // "-ooPort=7" is -o with the value "oPort=7": an unknown key, as in ssh.
    let e = err(&["-ooPort=7", "host"]);
    assert!(e.contains("unknown -o option 'oPort'"), "{e}");
    let o = run(&["-NCg46", "-p", "2", "host"]);
    assert!(o.compression && o.gateway_ports);
    assert_eq!(o.address_family, AddressFamily::Inet6);
    // A value may itself start with '-'.
    assert_eq!(run(&["-l", "-p", "host"]).user, "-p");
    let o = run(&["-i", "-weird-name", "host"]);
    assert_eq!(o.identity_files, vec![PathBuf::from("-weird-name")]);
}

#[test]
fn harmless_ssh_flags_are_accepted() {
    let o = run(&["-N", "-n", "-T", "-x", "-a", "-k", "host"]);
    assert_eq!(o.destination_host, "host");
}

#[test]
fn repeated_options_accumulate_or_keep_the_first() {
    let o = run(&[
        "-i",
        "a",
        "-i",
        "b",
        "-o",
        "IdentityFile c",
        "-L",
        "1:h:2",
        "-o",
        "LocalForward 3 h:4",
        "-L",
        "5:h:6",
        "host",
    ]);
    assert_eq!(
        o.identity_files,
        vec![PathBuf::from("a"), PathBuf::from("b"), PathBuf::from("c")]
    );
    assert_eq!(
        o.local_forwards,
        vec![
            fwd(None, 1, "h", 2),
            fwd(None, 3, "h", 4),
            fwd(None, 5, "h", 6)
        ]
    );
    let o = run(&["-p", "1", "-p", "2", "host"]);
    assert_eq!(o.port, 1);
}

#[test]
fn first_value_wins_as_in_openssh() {
    // Checked against `ssh -G`.
    assert_eq!(run(&["-p", "2200", "-o", "Port=2300", "host"]).port, 2200);
    assert_eq!(run(&["-o", "Port=2300", "-p", "2200", "host"]).port, 2300);
    assert_eq!(run(&["-l", "alice", "bob@host"]).user, "alice");
    assert_eq!(run(&["bob@host", "-l", "alice"]).user, "bob");
    assert_eq!(run(&["-o", "User=x", "-l", "y", "host"]).user, "x");
    assert_eq!(run(&["-o", "User=x", "y@host"]).user, "x");
    assert_eq!(run(&["-p", "1", "ssh://u@h:2022"]).port, 1);
    assert_eq!(run(&["ssh://u@h:2022", "-p", "1"]).port, 2022);
    assert_eq!(run(&["ssh://h", "-p", "1"]).port, 1);
    let o = run(&[
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "ConnectTimeout=6",
        "h",
    ]);
    assert_eq!(o.strict_host_key_checking, StrictHostKeyChecking::No);
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(5)));
    // Later values are still checked.
    let e = err(&["-o", "Port=1", "-o", "Port=x", "h"]);
    assert!(e.contains("bad port 'x' in Port"), "{e}");
}

#[test]
fn flags_that_override_settings() {
    // -c replaces Ciphers wherever it is; -v/-q replace LogLevel; -4/-6 AddressFamily.
    let o = run(&["-o", "Ciphers=aes128-ctr", "-c", "aes256-ctr", "h"]);
    assert_eq!(o.ciphers.as_deref(), Some("aes256-ctr"));
    let o = run(&["-c", "aes256-ctr", "-o", "Ciphers=aes128-ctr", "h"]);
    assert_eq!(o.ciphers.as_deref(), Some("aes256-ctr"));
    let o = run(&["-o", "LogLevel=ERROR", "-v", "h"]);
    assert_eq!(o.log_level, LogLevel::Debug1);
    let o = run(&["-v", "-o", "LogLevel=ERROR", "h"]);
    assert_eq!(o.log_level, LogLevel::Debug1);
    let o = run(&["-o", "LogLevel=error", "h"]);
    assert_eq!(o.log_level, LogLevel::Error);
    let o = run(&["-q", "h"]);
    assert_eq!(o.log_level, LogLevel::Quiet);
    assert_eq!(
        o.log_level.tracing_filter(),
        tracing::level_filters::LevelFilter::OFF
    );
    let o = run(&["-v", "-q", "h"]);
    assert_eq!(o.log_level, LogLevel::Quiet);
    let o = run(&["-o", "AddressFamily=inet6", "-4", "h"]);
    assert_eq!(o.address_family, AddressFamily::Inet);
    let o = run(&["-o", "AddressFamily=inet", "h"]);
    assert_eq!(o.address_family, AddressFamily::Inet);
}

#[test]
fn log_levels_map_to_tracing() {
    use tracing::level_filters::LevelFilter;
    for (word, level, filter) in [
        ("QUIET", LogLevel::Quiet, LevelFilter::OFF),
        ("fatal", LogLevel::Fatal, LevelFilter::ERROR),
        ("Error", LogLevel::Error, LevelFilter::ERROR),
        ("INFO", LogLevel::Info, LevelFilter::INFO),
        ("VERBOSE", LogLevel::Verbose, LevelFilter::INFO),
        ("DEBUG", LogLevel::Debug1, LevelFilter::DEBUG),
        ("DEBUG1", LogLevel::Debug1, LevelFilter::DEBUG),
        ("DEBUG2", LogLevel::Debug2, LevelFilter::TRACE),
        ("debug3", LogLevel::Debug3, LevelFilter::TRACE),
    ] {
        let o = run(&["-o", &format!("LogLevel {word}"), "h"]);
        assert_eq!(o.log_level, level, "{word}");
        assert_eq!(o.log_level.tracing_filter(), filter, "{word}");
    }
    let e = err(&["-o", "LogLevel=LOUD", "h"]);
    assert!(
        e.contains("bad value 'LOUD' for LogLevel: expected QUIET"),
        "{e}"
    );
}

#[test]
fn options_after_the_destination_and_remote_commands() {
    let o = run(&["host", "-p", "5", "-L", "1:db:2"]);
    assert_eq!(o.port, 5);
    assert_eq!(o.local_forwards.len(), 1);
    let e = err(&["host", "ls", "-l"]);
    assert_eq!(
        e,
        "forwarder only forwards ports and never runs a remote command, but 'ls -l' follows \
         the destination; remove it (options may come before the destination or right after it)"
    );
    assert!(err(&["host", "-N", "uptime"]).contains("'uptime'"));
    // `--` before the destination: options may still follow the destination.
    assert_eq!(run(&["--", "host", "-p", "7"]).port, 7);
    // `--` after the destination: the rest is a command.
    assert!(err(&["host", "--", "-p", "7"]).contains("'-p 7'"));
    assert_eq!(run(&["host", "--"]).port, 22);
    assert_eq!(err(&["--"]), CliError::MissingDestination.to_string());
}

#[test]
fn destination_is_required() {
    assert_eq!(parse(&[]), Err(CliError::MissingDestination));
    assert_eq!(parse(&["-N", "-v"]), Err(CliError::MissingDestination));
    assert!(err(&["-N"]).contains("no destination given: expected [user@]host"));
}

#[test]
fn destination_forms() {
    let o = run(&["ssh://deploy@Bastion.Example.com:2222"]);
    assert_eq!(
        (o.user.as_str(), o.destination_host.as_str(), o.port),
        ("deploy", "bastion.example.com", 2222)
    );
    assert_eq!(o.original_host, "Bastion.Example.com");
    let o = run(&["u@[::1]"]);
    assert_eq!(o.destination_host, "::1");
    let o = run(&["ssh://[2001:DB8::1]:2200"]);
    assert_eq!((o.destination_host.as_str(), o.port), ("2001:db8::1", 2200));
    assert!(err(&["host:22"]).contains("give a port with -p"));
    assert!(err(&["-p", "22", "a,b"]).contains("bad destination 'a,b'"));
}

#[test]
fn hostname_setting() {
    let o = run(&["-o", "HostName=10.1.2.3", "bastion"]);
    assert_eq!(o.destination_host, "10.1.2.3");
    assert_eq!(o.original_host, "bastion");
    let o = run(&["-o", "Hostname %h.corp.example", "Bastion"]);
    assert_eq!(o.destination_host, "bastion.corp.example");
    let o = run(&["-o", "hostname=a", "-o", "HostName=b", "h"]);
    assert_eq!(o.destination_host, "a");
    assert!(err(&["-o", "HostName=%x", "h"]).contains("bad value '%x' for HostName"));
    assert!(err(&["-o", "HostName=a b", "h"]).contains("a single value"));
    assert!(err(&["-o", "HostName=%h.x", "::1"]).contains("'::1.x'"));
    assert!(err(&["-o", "HostName=*", "h"]).contains("HostName"));
}

#[test]
fn help_and_version() {
    assert_eq!(parse(&["--help"]), Ok(Command::Help));
    assert_eq!(parse(&["-h"]), Ok(Command::Help));
    assert_eq!(parse(&["-N", "--help", "-Z"]), Ok(Command::Help));
    assert_eq!(parse(&["--version"]), Ok(Command::Version));
    assert_eq!(parse(&["-V"]), Ok(Command::Version));
    assert_eq!(
        version_text(),
        format!("forwarder {}", env!("CARGO_PKG_VERSION"))
    );
    let text = usage();
    for needle in [
        "-L [bind_address:]port:host:hostport",
        "-o Key=Value",
        "StrictHostKeyChecking",
        "-m macs",
        "-Q kind",
        "forwarder keygen",
        "+list appends",
        "HostKeyAlias",
        "IgnoreUnknown",
        "%C %d %h %i %j %k %L %l",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
}

#[test]
fn unknown_and_unsupported_options_are_named() {
    assert_eq!(
        err(&["-Z", "h"]),
        "unknown option -Z; run 'forwarder --help' for the options it takes"
    );
    assert_eq!(
        err(&["--frobnicate", "h"]),
        "unknown option --frobnicate; run 'forwarder --help' for the options it takes"
    );
    assert!(err(&["-Nvé", "h"]).contains("unknown option -é"));
    for (flag, needle) in [("-t", "terminal"), ("-A", "agent forwarding")] {
        let e = err(&[flag, "x", "h"]);
        assert!(
            e.starts_with(&format!("option {flag} is not supported by forwarder")),
            "{e}"
        );
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn missing_option_values() {
    assert_eq!(err(&["h", "-p"]), "option -p needs a value, as in -p 2222");
    assert!(err(&["-L"]).contains("-L 15432:db.internal:5432"));
    assert!(err(&["h", "-o"]).contains("option -o needs a value"));
    assert!(err(&["h", "-Nvi"]).contains("option -i needs a value"));
}

#[test]
fn bad_ports() {
    assert_eq!(
        err(&["-p", "0", "h"]),
        "bad port '0' in -p: expected a number from 1 to 65535"
    );
    for bad in ["65536", "x", "", "+22", " 22", "-1", "222222"] {
        assert!(err(&["-p", bad, "h"]).contains("bad port"), "{bad}");
    }
    assert_eq!(run(&["-p", "65535", "h"]).port, 65535);
    assert_eq!(run(&["-p", "022", "h"]).port, 22);
    assert!(err(&["-o", "Port=0", "h"]).contains("in Port"));
}

#[test]
fn bad_forward_message_shows_the_expected_form() {
    assert_eq!(
        err(&["-L", "15432:db", "h"]),
        "bad -L specification '15432:db': expected [bind_address:]port:host:hostport \
         (it has 2 fields, not 3 or 4)"
    );
    assert!(err(&["-o", "LocalForward=5", "h"]).starts_with(
        "bad LocalForward specification '5': expected [bind_address:]port host:hostport"
    ));
}

#[test]
fn bind_targets() {
    let o = run(&[
        "-L",
        "1:h:2",
        "-L",
        "*:3:h:4",
        "-L",
        ":5:h:6",
        "-L",
        "localhost:7:h:8",
        "-L",
        "[::1]:9:h:10",
        "-L",
        "192.0.2.1:11:h:12",
        "host",
    ]);
    let targets: Vec<_> = o
        .local_forwards
        .iter()
        .filter_map(|f| f.listen.bind_target(false))
        .collect();
    assert_eq!(
        targets,
        vec![
            BindTarget::Loopback,
            BindTarget::AllInterfaces,
            BindTarget::AllInterfaces,
            BindTarget::Loopback,
            BindTarget::Address("::1".into()),
            BindTarget::Address("192.0.2.1".into()),
        ]
    );
    // -g only changes forwards without a bind address.
    let o = run(&["-g", "-L", "1:h:2", "-L", "localhost:3:h:4", "host"]);
    assert_eq!(
        o.local_forwards[0].listen.bind_target(o.gateway_ports),
        Some(BindTarget::AllInterfaces)
    );
    assert_eq!(
        o.local_forwards[1].listen.bind_target(o.gateway_ports),
        Some(BindTarget::Loopback)
    );
    assert!(run(&["-o", "GatewayPorts=yes", "h"]).gateway_ports);
}

#[test]
fn socket_paths_expand_home_tokens_and_variables_as_ssh_does() {
    // env(): home /home/u (see `env`), and tokens from the destination.
    let o = run(&[
        "-L",
        "~/run/%h.sock:/srv/%r/.s.PGSQL.5432",
        "-L",
        "15432:/tmp/%%/x.sock",
        "-l",
        "app",
        "bastion",
    ]);
    let home = env().home.expect("a home").display().to_string();
    assert_eq!(
        o.local_forwards[0].listen,
        Listen::Path(PathBuf::from(format!("{home}/run/bastion.sock")))
    );
    assert_eq!(
        o.local_forwards[0].to,
        Destination::Unix("/srv/app/.s.PGSQL.5432".into())
    );
    assert_eq!(
        o.local_forwards[1].to,
        Destination::Unix("/tmp/%/x.sock".into())
    );
    // TCP forwards are left as they are.
    let o = run(&["-L", "1:%h:2", "h"]);
    assert_eq!(o.local_forwards, vec![fwd(None, 1, "%h", 2)]);
    assert!(err(&["-L", "1:/tmp/%Q.sock", "h"]).contains("%Q"));
    // Still within a socket address once expanded (found by the cli_args fuzz target): 100
    // bytes as given, more once %h is the host name.
    let long = format!("1:/{}/%h", "d".repeat(96));
    let e = err(&["-L", &long, "a-rather-long-bastion-name.example.com"]);
    assert!(
        e.contains("once expanded, more than a Unix socket path can be"),
        "{e}"
    );
    let e = err(&[
        "-L",
        &format!("/{}/%h:db:1", "d".repeat(96)),
        "a-long-host.example",
    ]);
    assert!(e.contains("once expanded"), "{e}");
    // -R too, both sides, as ssh expands RemoteForward's paths; the error names -R.
    let o = run(&["-R", "/srv/%r/fwd.sock:~/%h.sock", "-l", "app", "bastion"]);
    assert_eq!(
        o.remote_forwards[0].listen,
        Listen::Path(PathBuf::from("/srv/app/fwd.sock"))
    );
    assert_eq!(
        o.remote_forwards[0].to,
        Destination::Unix(format!("{home}/bastion.sock"))
    );
    let e = err(&[
        "-R",
        &format!("/{}/%h:db:1", "d".repeat(96)),
        "a-long-host.example",
    ]);
    assert!(e.contains("bad -R") && e.contains("once expanded"), "{e}");
}

#[test]
fn stream_local_bind_options() {
    let o = run(&["-L", "/tmp/x/pg.sock:db:5432", "h"]);
    assert_eq!(o.stream_local_bind_mask, 0o177);
    assert!(!o.stream_local_bind_unlink);
    assert_eq!(
        o.local_forwards[0].listen,
        Listen::Path(PathBuf::from("/tmp/x/pg.sock"))
    );
    let o = run(&[
        "-o",
        "StreamLocalBindMask=0117",
        "-o",
        "StreamLocalBindMask=0",
        "-o",
        "streamlocalbindunlink yes",
        "h",
    ]);
    assert_eq!(o.stream_local_bind_mask, 0o117, "the first value wins");
    assert!(o.stream_local_bind_unlink);
    assert_eq!(
        run(&["-o", "StreamLocalBindMask=0", "h"]).stream_local_bind_mask,
        0
    );
    for bad in ["0800", "1000", "abc", "-1", "+7"] {
        let e = err(&["-o", &format!("StreamLocalBindMask={bad}"), "h"]);
        assert!(e.contains("octal mode mask"), "{bad}: {e}");
    }
    let e = err(&["-o", "StreamLocalBindUnlink=maybe", "h"]);
    assert!(e.contains("yes or no"), "{e}");
}

#[test]
fn dash_o_syntax() {
    for arg in [
        "Port=2222",
        "Port 2222",
        "port = 2222",
        "PORT\t2222",
        " Port=2222 ",
    ] {
        assert_eq!(run(&["-o", arg, "h"]).port, 2222, "{arg}");
    }
    assert_eq!(
        err(&["-o", "Port", "h"]),
        "bad -o 'Port': no key; expected -o Key=Value or -o \"Key Value\""
    );
    assert!(err(&["-o", "Port=", "h"]).contains("the value is missing"));
    assert!(err(&["-o", "=5", "h"]).contains("no key"));
    assert!(err(&["-o", "UserKnownHostsFile=\"a", "h"]).contains("quote is not closed"));
    assert!(err(&["-o", "Port=1 2", "h"]).contains("expected a single value"));
}

#[test]
fn unknown_and_unsupported_keys() {
    let e = err(&["-o", "Bogus=1", "h"]);
    assert!(
        e.starts_with("unknown -o option 'Bogus'; forwarder takes Port, User"),
        "{e}"
    );
    let e = err(&["-o", "ForwardAgent=yes", "h"]);
    assert!(
        e.starts_with("-o ForwardAgent is an OpenSSH option that forwarder does not support"),
        "{e}"
    );
    let o = run(&[
        "-R",
        "0:localhost:22",
        "-o",
        "RemoteForward=8022 db:5432",
        "h",
    ]);
    assert_eq!(o.remote_forwards.len(), 2);
    assert_eq!(o.remote_forwards[0].port(), Some(0));
    assert_eq!(o.remote_forwards[1].to.to_string(), "db:5432");
    assert!(err(&["-R", "nope", "h"]).contains("bad -R specification"));
    assert!(err(&["-o", "ProxyCommand=nc %h %p", "h"]).contains("is not supported"));
}

#[test]
fn macs_and_pubkey_algorithms_are_taken_raw() {
    let o = run(&[
        "-o",
        "MACs=+hmac-sha1",
        "-o",
        "PubkeyAcceptedAlgorithms=-ssh-rsa",
        "h",
    ]);
    assert_eq!(o.macs.as_deref(), Some("+hmac-sha1"));
    assert_eq!(o.pubkey_accepted_algorithms.as_deref(), Some("-ssh-rsa"));
    // -m wins over -o MACs wherever it appears, as -c does over Ciphers.
    let o = run(&["-o", "MACs=hmac-sha2-512", "h", "-m", "hmac-sha2-256"]);
    assert_eq!(o.macs.as_deref(), Some("hmac-sha2-256"));
    let o = run(&["-o", "PubkeyAcceptedKeyTypes=rsa-sha2-256", "h"]);
    assert_eq!(
        o.pubkey_accepted_algorithms.as_deref(),
        Some("rsa-sha2-256")
    );
}

#[test]
fn query_and_keygen_commands() {
    assert!(matches!(parse(&["-Q", "cipher"]), Ok(Command::Query(q)) if q == "cipher"));
    assert!(matches!(parse(&["-Qkex"]), Ok(Command::Query(q)) if q == "kex"));
    match parse(&[
        "keygen",
        "-t",
        "ed25519",
        "-f",
        "/tmp/x",
        "--permit-open",
        "db:5432",
    ]) {
        Ok(Command::Keygen(k)) => {
            assert_eq!(k.key_type, crate::cli::keygen::KeygenType::Ed25519);
            assert_eq!(k.permit_open, ["db:5432"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["keygen", "-t", "dsa"]).is_err());
}

#[test]
fn strict_host_key_checking_values() {
    for (word, want) in [
        ("yes", StrictHostKeyChecking::Yes),
        ("True", StrictHostKeyChecking::Yes),
        ("accept-new", StrictHostKeyChecking::AcceptNew),
        ("no", StrictHostKeyChecking::No),
        ("off", StrictHostKeyChecking::No),
        ("OFF", StrictHostKeyChecking::No),
        ("false", StrictHostKeyChecking::No),
    ] {
        let o = run(&["-o", &format!("StrictHostKeyChecking={word}"), "h"]);
        assert_eq!(o.strict_host_key_checking, want, "{word}");
        assert!(o.warnings.is_empty());
    }
    let o = run(&["-o", "StrictHostKeyChecking=ask", "h"]);
    assert_eq!(o.strict_host_key_checking, StrictHostKeyChecking::Yes);
    assert_eq!(o.warnings.len(), 1);
    assert!(
        o.warnings[0].contains("ask is taken as yes"),
        "{:?}",
        o.warnings
    );
    // A later ask that does not win says nothing.
    let o = run(&[
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "StrictHostKeyChecking=ask",
        "h",
    ]);
    assert!(o.warnings.is_empty());
    assert_eq!(
        err(&["-o", "StrictHostKeyChecking=maybe", "h"]),
        "bad value 'maybe' for StrictHostKeyChecking: expected yes, accept-new, no, off or ask"
    );
    assert_eq!(StrictHostKeyChecking::AcceptNew.to_string(), "accept-new");
}

#[test]
fn known_hosts_files() {
    let o = run(&["-o", "UserKnownHostsFile=~/a /b %d/c", "h"]);
    assert_eq!(
        o.user_known_hosts_files,
        vec![
            PathBuf::from("/home/tester/a"),
            PathBuf::from("/b"),
            PathBuf::from("/home/tester/c")
        ]
    );
    let o = run(&["-o", "UserKnownHostsFile \"/with space/kh\" other", "h"]);
    assert_eq!(
        o.user_known_hosts_files,
        vec![PathBuf::from("/with space/kh"), PathBuf::from("other")]
    );
    let o = run(&["-o", "UserKnownHostsFile=none", "h"]);
    assert!(o.user_known_hosts_files.is_empty());
    assert_eq!(o.known_hosts_record_file(), None);
    let o = run(&[
        "-o",
        "UserKnownHostsFile=a b",
        "-o",
        "UserKnownHostsFile=c",
        "h",
    ]);
    assert_eq!(
        o.user_known_hosts_files,
        vec![PathBuf::from("a"), PathBuf::from("b")]
    );
}

#[test]
fn global_known_hosts_files() {
    // Regression: GlobalKnownHostsFile was refused on the command line and skipped in
    // ssh_config, and /etc/ssh/ssh_known_hosts was never read.
    let o = run(&["-o", "GlobalKnownHostsFile=~/g /etc/ssh/x %d/y", "h"]);
    // As in ssh, only ~ is expanded here.
    assert_eq!(
        o.global_known_hosts_files,
        vec![
            PathBuf::from("/home/tester/g"),
            PathBuf::from("/etc/ssh/x"),
            PathBuf::from("%d/y")
        ]
    );
    // Looked up after the user's files; never the record file.
    assert_eq!(
        o.known_hosts_files(),
        vec![
            PathBuf::from("/home/tester/.ssh/known_hosts"),
            PathBuf::from("/home/tester/.ssh/known_hosts2"),
            PathBuf::from("/home/tester/g"),
            PathBuf::from("/etc/ssh/x"),
            PathBuf::from("%d/y")
        ]
    );
    let o = run(&[
        "-o",
        "GlobalKnownHostsFile none",
        "-o",
        "UserKnownHostsFile=none",
        "h",
    ]);
    assert!(o.global_known_hosts_files.is_empty() && o.known_hosts_files().is_empty());
    assert_eq!(o.known_hosts_record_file(), None);
    let o = run(&[
        "-o",
        "globalknownhostsfile=/a",
        "-o",
        "GlobalKnownHostsFile=/b",
        "-o",
        "UserKnownHostsFile=/u",
        "h",
    ]);
    assert_eq!(o.global_known_hosts_files, vec![PathBuf::from("/a")]);
    assert_eq!(
        o.known_hosts_files(),
        vec![PathBuf::from("/u"), PathBuf::from("/a")]
    );
    assert_eq!(
        o.known_hosts_record_file(),
        Some(std::path::Path::new("/u"))
    );
    assert!(err(&["-o", "GlobalKnownHostsFile=~other/kh", "h"]).contains("~user"));
    // From ssh_config too, where the command line wins, and a hop takes it from either.
    let text = "\
Host db
    GlobalKnownHostsFile /etc/fleet/known_hosts
Host jump
    GlobalKnownHostsFile none
";
    let o = config_ok(&["db"], text);
    assert_eq!(
        o.global_known_hosts_files,
        vec![PathBuf::from("/etc/fleet/known_hosts")]
    );
    assert!(
        o.notes.iter().all(|n| !n.contains("GlobalKnownHostsFile")),
        "{:?}",
        o.notes
    );
    let o = config_ok(&["-o", "GlobalKnownHostsFile=/cli", "db"], text);
    assert_eq!(o.global_known_hosts_files, vec![PathBuf::from("/cli")]);
    let o = config_ok(&["-J", "jump,other", "db"], text);
    assert!(o.proxy_jump[0].options.global_known_hosts_files.is_empty());
    assert_eq!(
        o.proxy_jump[1].options.global_known_hosts_files,
        vec![
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2")
        ]
    );
    let o = config_ok(
        &["-o", "GlobalKnownHostsFile=/cli", "-J", "other", "db"],
        text,
    );
    assert_eq!(
        o.proxy_jump[0].options.global_known_hosts_files,
        vec![PathBuf::from("/cli")]
    );
}

#[test]
fn path_tokens() {
    let o = run(&[
        "-i",
        "~/keys/%r@%h:%p-%n-%u-%%",
        "-o",
        "HostName=real.example",
        "-p",
        "2022",
        "-l",
        "deploy",
        "Alias",
    ]);
    assert_eq!(
        o.identity_files,
        vec![PathBuf::from(
            "/home/tester/keys/deploy@real.example:2022-Alias-tester-%"
        )]
    );
    let o = run(&["-i", "~", "h"]);
    assert_eq!(o.identity_files, vec![PathBuf::from("/home/tester")]);
    let e = err(&["-i", "~root/.ssh/id", "h"]);
    assert!(e.contains("not ~user"), "{e}");
    let e = err(&["-i", "k%z", "h"]);
    assert!(e.contains("unknown token '%z'"), "{e}");
    let e = err(&["-i", "k%", "h"]);
    assert!(e.contains("unknown token '%'"), "{e}");
    assert!(err(&["-i", "", "h"]).contains("-i"));
    let e = err(&["-o", "UserKnownHostsFile=\"\"", "h"]);
    assert!(e.contains("the path is empty"), "{e}");
}

#[test]
fn times_and_counts() {
    let o = run(&[
        "-o",
        "ConnectTimeout=1m30s",
        "-o",
        "ServerAliveInterval 15",
        "-o",
        "ServerAliveCountMax=5",
        "h",
    ]);
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(90)));
    assert_eq!(o.server_alive_interval, Some(Duration::from_secs(15)));
    assert_eq!(o.server_alive_count_max, 5);
    let o = run(&["-o", "ConnectTimeout=0", "-o", "ServerAliveInterval=0", "h"]);
    assert_eq!((o.connect_timeout, o.server_alive_interval), (None, None));
    let o = run(&["-o", "ConnectTimeout=none", "-o", "ConnectTimeout=5", "h"]);
    assert_eq!(o.connect_timeout, None);
    assert_eq!(
        run(&["-o", "ServerAliveCountMax=0", "h"]).server_alive_count_max,
        0
    );
    assert!(
        err(&["-o", "ConnectTimeout=soon", "h"])
            .contains("expected seconds, or a time such as 30s")
    );
    assert!(err(&["-o", "ServerAliveCountMax=-1", "h"]).contains("a whole number"));
    assert!(err(&["-o", "ServerAliveCountMax=+1", "h"]).contains("a whole number"));
    assert!(err(&["-o", "ServerAliveCountMax=99999999999", "h"]).contains("a whole number"));
}

#[test]
fn flags_and_raw_settings() {
    let o = run(&[
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "Compression=yes",
        "-o",
        "HashKnownHosts=yes",
        "-o",
        "Ciphers=aes256-gcm@openssh.com,aes128-ctr",
        "-o",
        "KexAlgorithms=-diffie-hellman-group14-sha256",
        "-o",
        "HostKeyAlgorithms=+ssh-rsa",
        "-o",
        "RekeyLimit 1G 1h",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "CheckHostIP=no",
        "-o",
        "PubkeyAuthentication=yes",
        "h",
    ]);
    assert!(o.exit_on_forward_failure && o.batch_mode && o.compression && o.hash_known_hosts);
    assert_eq!(
        o.ciphers.as_deref(),
        Some("aes256-gcm@openssh.com,aes128-ctr")
    );
    assert_eq!(
        o.kex_algorithms.as_deref(),
        Some("-diffie-hellman-group14-sha256")
    );
    assert_eq!(o.host_key_algorithms.as_deref(), Some("+ssh-rsa"));
    assert_eq!(
        o.rekey_limit,
        Some(crate::cli::RekeyLimit {
            bytes: Some(1 << 30),
            interval: Some(std::time::Duration::from_secs(3600))
        })
    );
    let o = run(&[
        "-o",
        "ExitOnForwardFailure=no",
        "-o",
        "ExitOnForwardFailure=yes",
        "h",
    ]);
    assert!(!o.exit_on_forward_failure);
    assert_eq!(
        err(&["-o", "BatchMode=sure", "h"]),
        "bad value 'sure' for BatchMode: expected yes or no"
    );
    assert!(o_flags_default_on(&run(&["h"])));
    assert!(err(&["-o", "RekeyLimit=1G 1h 2", "h"]).contains("RekeyLimit"));
    assert!(err(&["-o", "Ciphers=a b", "h"]).contains("a single value"));
}

#[test]
fn local_forward_setting() {
    let o = run(&["-o", "LocalForward=15432 db:5432", "h"]);
    assert_eq!(o.local_forwards, vec![fwd(None, 15432, "db", 5432)]);
    let o = run(&["-o", "localforward \"127.0.0.1:1\" [::1]:2", "h"]);
    assert_eq!(o.local_forwards, vec![fwd(Some("127.0.0.1"), 1, "::1", 2)]);
    assert!(err(&["-o", "LocalForward=15432:db:5432", "h"]).contains("target host:hostport"));
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_refused() {
    use std::os::unix::ffi::OsStringExt as _;
    let bad = OsString::from_vec(vec![b'h', 0xff]);
    let e = parse_args_with_env([OsString::from("-N"), bad], &env());
    assert!(matches!(e, Err(CliError::NotUtf8 { .. })), "{e:?}");
    assert!(
        e.err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("UTF-8")
    );
}

#[test]
fn error_messages_escape_control_characters() {
    let e = err(&["-o", "Bogus\u{1b}[2J=1", "h"]);
    assert!(!e.contains('\u{1b}'), "{e:?}");
    assert!(e.contains("\\x1b"), "{e:?}");
}

#[test]
fn environment_from_process_is_usable() {
    // Whatever this machine has, the call must not fail, and a set $HOME must be used.
    let env = Environment::from_process();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        assert_eq!(env.home, Some(PathBuf::from(home)));
    }
}

fn arg_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-N".to_owned()),
        Just("-p".to_owned()),
        Just("-L".to_owned()),
        Just("-o".to_owned()),
        Just("--".to_owned()),
        Just("-vvv".to_owned()),
        Just("-i".to_owned()),
        Just("host".to_owned()),
        Just("ssh://u@[::1]:22".to_owned()),
        Just("Port=22".to_owned()),
        Just("LocalForward 1 h:2".to_owned()),
        Just("UserKnownHostsFile ~/%h".to_owned()),
        Just("[::1]:1:[::2]:3".to_owned()),
        "-[a-zA-Z0-9]{1,4}",
        "[-a-z:\\[\\]@%~/=\" ]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn random_argument_vectors_never_panic(args in proptest::collection::vec(arg_strategy(), 0..8)) {
        let result = parse_args_with_env(args.iter().cloned(), &env());
        match result {
            Ok(Command::Run(o)) => {
                prop_assert!(!o.destination_host.is_empty());
                prop_assert!(o.port != 0);
            }
            Ok(_) => {}
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn forward_display_parses_back(
        bind in proptest::option::of(prop_oneof![Just("*".to_owned()), Just("::1".to_owned()), "[a-z0-9.]{1,10}"]),
        port in any::<u16>(),
        host in prop_oneof![Just("fd00::1".to_owned()), "[a-z0-9.-]{1,12}"],
        host_port in 1u16..,
    ) {
        let f = ForwardSpec::tcp(bind.as_deref(), port, &host, host_port);
        let shown = f.to_string();
        let back = run(&["-L", &shown, "h"]);
        prop_assert_eq!(back.local_forwards, vec![f]);
    }
}

fn o_flags_default_on(o: &Options) -> bool {
    o.pubkey_authentication && o.password_authentication && o.kbd_interactive_authentication
}

#[test]
fn authentication_settings() {
    let o = run(&["h"]);
    assert_eq!(o.identity_agent, IdentityAgent::AuthSock);
    assert!(!o.identities_only && o.certificate_files.is_empty());
    assert_eq!(o.number_of_password_prompts, 3);
    assert_eq!(
        (o.password_file.as_ref(), o.password_env.as_ref()),
        (None, None)
    );
    let o = run(&[
        "-o",
        "IdentityAgent=~/agent.sock",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "CertificateFile=~/.ssh/id-cert.pub",
        "-o",
        "CertificateFile=/etc/ssh/%r-cert.pub",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "ChallengeResponseAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=1",
        "-o",
        "PasswordFile=~/pw",
        "-o",
        "PassphraseEnv=KEY_PASS",
        "-l",
        "deploy",
        "h",
    ]);
    assert_eq!(
        o.identity_agent,
        IdentityAgent::Path(PathBuf::from("/home/tester/agent.sock"))
    );
    assert!(o.identities_only);
    assert_eq!(
        o.certificate_files,
        [
            PathBuf::from("/home/tester/.ssh/id-cert.pub"),
            PathBuf::from("/etc/ssh/deploy-cert.pub")
        ]
    );
    assert!(
        !o.pubkey_authentication && !o.password_authentication && !o.kbd_interactive_authentication
    );
    assert_eq!(o.number_of_password_prompts, 1);
    assert_eq!(o.password_file, Some(PathBuf::from("/home/tester/pw")));
    assert_eq!(o.passphrase_env.as_deref(), Some("KEY_PASS"));
    for (v, expected) in [
        ("none", IdentityAgent::None),
        ("SSH_AUTH_SOCK", IdentityAgent::AuthSock),
        ("$MY_SOCK", IdentityAgent::Env("MY_SOCK".into())),
    ] {
        let o = run(&["-o", &format!("IdentityAgent={v}"), "h"]);
        assert_eq!(o.identity_agent, expected, "{v}");
    }
    assert!(err(&["-o", "IdentityAgent=$", "h"]).contains("IdentityAgent"));
    let o = run(&[
        "-o",
        "KbdInteractiveAuthentication=no",
        "-o",
        "PassphraseFile=/k/pass",
        "h",
    ]);
    assert!(!o.kbd_interactive_authentication);
    assert_eq!(o.passphrase_file, Some(PathBuf::from("/k/pass")));
}

#[test]
fn secrets_are_named_never_given() {
    // An environment variable's name is wanted, not a password.
    let e = err(&["-o", "PasswordEnv=hunter 2", "h"]);
    assert!(e.contains("a single value"), "{e}");
    let e = err(&["-o", "PasswordEnv=p@ss", "h"]);
    assert!(e.contains("the name of an environment variable"), "{e}");
    assert!(err(&["-o", "PassphraseEnv=1ABC", "h"]).contains("environment variable"));
    assert!(err(&["-o", "NumberOfPasswordPrompts=many", "h"]).contains("whole number"));
    assert!(err(&["-o", "NumberOfPasswordPrompts=1000", "h"]).contains("whole number"));
    let help = usage();
    for key in [
        "PasswordFile",
        "PasswordEnv",
        "PassphraseFile",
        "PassphraseEnv",
        "IdentityAgent",
    ] {
        assert!(help.contains(key), "--help does not mention {key}");
    }
}

#[test]
fn preferred_authentications_is_a_list_with_a_method_we_have() {
    let o = run(&["h"]);
    assert_eq!(o.preferred_authentications, None);
    let o = run(&[
        "-o",
        "PreferredAuthentications=gssapi-with-mic,password,publickey",
        "h",
    ]);
    assert_eq!(
        o.preferred_authentications.as_deref(),
        Some(
            &[
                "gssapi-with-mic".to_owned(),
                "password".into(),
                "publickey".into()
            ][..]
        )
    );
    let e = err(&["-o", "PreferredAuthentications=hostbased", "h"]);
    assert!(
        e.contains("PreferredAuthentications") && e.contains("keyboard-interactive"),
        "{e}"
    );
}

#[test]
fn jump_hosts_keep_their_own_user_and_port_and_first_value_wins() {
    let o = run(&[
        "-J",
        "alice@j1:2222,j2",
        "-l",
        "bob",
        "-p",
        "2200",
        "db-bastion",
    ]);
    let hops: Vec<(&str, &str, u16)> = o
        .proxy_jump
        .iter()
        .map(|j| (j.user.as_str(), j.host.as_str(), j.port))
        .collect();
    // The second hop: not the destination's -l or -p but the local user and port 22, as ssh.
    assert_eq!(hops, [("alice", "j1", 2222), ("tester", "j2", 22)]);
    assert_eq!((o.user.as_str(), o.port), ("bob", 2200));
    // One -J, as ssh allows: a second one, or one after -o ProxyJump, is refused rather than
    // silently losing to the first.
    for twice in [
        ["-J", "j1", "-J", "j2", "h"],
        ["-o", "ProxyJump=none", "-J", "j1", "h"],
        ["-o", "ProxyJump=j0", "-J", "j1", "h"],
    ] {
        let e = err(&twice);
        assert!(
            e.contains("a single -J") && e.contains("commas"),
            "{twice:?}: {e}"
        );
    }
    let o = run(&["-J", "J1", "-o", "ProxyJump=j2", "h"]);
    assert_eq!(o.proxy_jump[0].host, "j1");
    assert!(err(&["-J", "j1,,j2", "h"]).contains("jump hosts as [user@]host[:port]"));
    assert!(err(&["-J"]).contains("-J user@jump1:2222,jump2"));
}

#[test]
fn stdio_forward_takes_one_host_and_port() {
    let o = run(&["-W", "db.internal:5432", "h"]);
    assert_eq!(
        o.stdio_forward,
        Some(Destination::Tcp(Target {
            host: "db.internal".into(),
            port: 5432
        }))
    );
    let o = run(&["-W", "/run/pg/.s.PGSQL.5432", "h"]);
    assert_eq!(
        o.stdio_forward,
        Some(Destination::Unix("/run/pg/.s.PGSQL.5432".into()))
    );
    assert!(o.local_forwards.is_empty());
    assert!(err(&["-W", "db", "h"]).contains("-W"));
    assert!(err(&["-W", "a:1", "-W", "b:2", "h"]).contains("a single -W"));
}

// ssh_config behaviours, read from text (no file is opened) unless a test needs files.

fn with_config(args: &[&str], config: &str) -> Result<Options, String> {
    match parse_args_with_config_text(args.iter().copied(), &env(), config) {
        Ok(Command::Run(o)) => Ok(o),
        Ok(other) => panic!("{args:?} gave {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

fn config_ok(args: &[&str], config: &str) -> Options {
    with_config(args, config).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn config_err(args: &[&str], config: &str) -> String {
    match with_config(args, config) {
        Err(e) => e,
        Ok(o) => panic!("{args:?} should fail, gave {o:?}"),
    }
}

fn hop_hosts(o: &Options) -> Vec<&str> {
    o.proxy_jump.iter().map(|j| j.host.as_str()).collect()
}

#[test]
fn a_proxy_command_that_applies_is_refused_with_proxy_jump_suggested() {
    let text = "\
Host db
    ProxyCommand ssh -W %h:%p bastion
Host other
    ProxyCommand nc %h %p
";
    let e = config_err(&["db"], text);
    assert!(e.starts_with("config line 2: ProxyCommand"), "{e}");
    assert!(
        e.contains("ssh -W %h:%p bastion") && e.contains("ProxyJump"),
        "{e}"
    );
    // In a block that does not apply it is only checked, as every line is.
    let o = config_ok(&["web"], text);
    assert!(o.proxy_jump.is_empty() && o.warnings.is_empty());
    assert!(
        config_ok(&["db"], "Host db\n    ProxyCommand none\n")
            .proxy_jump
            .is_empty()
    );
    let e = err(&["-o", "ProxyCommand=nc %h %p", "db"]);
    assert!(
        e.starts_with("ProxyCommand 'nc %h %p'") && e.contains("ProxyJump"),
        "{e}"
    );
    assert!(
        run(&["-o", "ProxyCommand=NONE", "db"])
            .proxy_jump
            .is_empty()
    );
    // A ProxyJump obtained first sets ProxyCommand none, as in ssh: the later line is not used.
    let o = config_ok(
        &["db"],
        "Host db\n    ProxyJump bastion\n    ProxyCommand nc %h %p\n",
    );
    assert_eq!(hop_hosts(&o), ["bastion"]);
    let o = config_ok(&["-J", "bastion", "db"], text);
    assert_eq!(hop_hosts(&o), ["bastion"]);
    // The first hop is reached the way its own block says, so its ProxyCommand is refused; a
    // later hop is reached through the hops before it, as ssh's `-J` for it does.
    let hops = "Host j0\n    Port 2\nHost j1 j2\n    ProxyCommand nc %h %p\n";
    for first in [&["-J", "j1", "db"][..], &["-J", "j2,j0", "db"]] {
        let e = config_err(first, hops);
        assert!(
            e.starts_with("config line 4: ProxyCommand"),
            "{first:?}: {e}"
        );
    }
    let o = config_ok(&["-J", "j0,j2", "db"], hops);
    assert_eq!(hop_hosts(&o), ["j0", "j2"]);
}

#[test]
fn proxy_command_none_obtained_first_means_no_jump_host() {
    let text = "\
Host bastion
    ProxyCommand none
Host *
    ProxyJump bastion
";
    // Without the precedence, bastion would jump through itself until the chain limit.
    assert!(config_ok(&["bastion"], text).proxy_jump.is_empty());
    let o = config_ok(&["db"], text);
    assert_eq!(hop_hosts(&o), ["bastion"]);
    assert!(o.proxy_jump[0].options.proxy_jump.is_empty());
    assert!(
        config_ok(&["-o", "ProxyCommand=none", "db"], text)
            .proxy_jump
            .is_empty()
    );
    // ssh refuses -J once a ProxyCommand is set; so does forwarder rather than drop the -J.
    let e = config_err(&["-o", "ProxyCommand=none", "-J", "j1", "db"], "");
    assert!(e.contains("-J") && e.contains("ProxyCommand"), "{e}");
    // ProxyJump none leaves ProxyCommand unset, as in ssh: a later ProxyCommand applies.
    let e = config_err(&["db"], "ProxyJump none\nProxyCommand nc %h %p\n");
    assert!(e.starts_with("config line 2: ProxyCommand"), "{e}");
}

#[test]
fn revoked_host_keys_is_a_list_of_files_with_tokens_and_the_first_obtained_wins() {
    let paths = |o: &Options| o.revoked_host_keys.clone();
    assert!(run(&["h"]).revoked_host_keys.is_empty(), "none by default");
    let o = config_ok(
        &["h"],
        "Host h\n    RevokedHostKeys ~/.ssh/revoked_keys /etc/ssh/krl_%h\n",
    );
    assert_eq!(
        paths(&o),
        [
            PathBuf::from("/home/tester/.ssh/revoked_keys"),
            PathBuf::from("/etc/ssh/krl_h")
        ]
    );
    // none, obtained first, wins; so does a file list; a block that does not apply changes
    // nothing.
    let o = config_ok(
        &["h"],
        "Host h\n    RevokedHostKeys none\n    RevokedHostKeys /k\n",
    );
    assert!(o.revoked_host_keys.is_empty());
    let o = config_ok(&["h"], "RevokedHostKeys /first\nRevokedHostKeys /second\n");
    assert_eq!(paths(&o), [PathBuf::from("/first")]);
    assert!(
        config_ok(&["h"], "Host other\n    RevokedHostKeys /k\n")
            .revoked_host_keys
            .is_empty()
    );
    // The command line wins over the file.
    let o = config_ok(
        &["-o", "RevokedHostKeys=/cli", "h"],
        "RevokedHostKeys /file\n",
    );
    assert_eq!(paths(&o), [PathBuf::from("/cli")]);
    assert_eq!(
        paths(&run(&["-o", "RevokedHostKeys=/a /b", "h"])),
        [PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert!(
        run(&["-o", "RevokedHostKeys=none", "h"])
            .revoked_host_keys
            .is_empty()
    );
    // none must stand alone, and a value is needed.
    let e = config_err(&["h"], "RevokedHostKeys none /k\n");
    assert!(
        e.starts_with("config line 1: ") && e.contains("RevokedHostKeys"),
        "{e}"
    );
    let e = err(&["-o", "RevokedHostKeys=", "h"]);
    assert!(e.contains("RevokedHostKeys"), "{e}");
}

#[test]
fn match_takes_criterion_equals_argument() {
    let text = "\
Host alias
    HostName real.example.com
Match host=real.example.com user=admin
    Port 1111
Match originalhost=alias
    Port 2222
Match !HOST=*.example.com localuser=tester
    Port 3333
Match exec=true
    Port 4444
";
    assert_eq!(config_ok(&["admin@alias"], text).port, 1111);
    assert_eq!(config_ok(&["alias"], text).port, 2222);
    assert_eq!(config_ok(&["other"], text).port, 3333);
    assert_eq!(config_ok(&["x.example.com"], text).port, 22);
    let e = config_err(&["h"], "Match host=\n");
    assert!(e.contains("line 1") && e.contains("needs a value"), "{e}");
    let e = config_err(&["h"], "Match bogus=x\n");
    assert!(e.contains("unknown Match criterion 'bogus=x'"), "{e}");
}

#[test]
fn unknown_keywords_are_warnings_unless_ignore_unknown_names_them() {
    // A misspelt Host: the lines after it stay in prod's block, as the warning says.
    let text = "\
Host prod
    HostName prod.example.com
Hots staging
    StrictHostKeyChecking no
";
    for host in ["prod", "staging"] {
        let o = config_ok(&[host], text);
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        let w = &o.warnings[0];
        assert!(
            w.starts_with("config line 3: unknown keyword 'Hots'"),
            "{w}"
        );
        assert!(w.contains("Host"), "{w}");
    }
    let o = config_ok(
        &["prod"],
        &format!("IgnoreUnknown hots,usekeychain\n{text}"),
    );
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    // Settings forwarder knows of but does not implement stay -v notes.
    let o = config_ok(&["h"], "ForwardAgent yes\nUseKeychain yes\n");
    assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
    assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
    assert!(!o.warnings[0].contains("did you mean"), "{:?}", o.warnings);
}

#[test]
fn a_byte_order_mark_does_not_hide_the_first_keyword() {
    let text = "\u{feff}Host db\n    Port 2222\n";
    assert_eq!(config_ok(&["db"], text).port, 2222);
    let o = config_ok(&["other"], text);
    assert_eq!(o.port, 22);
    assert!(o.warnings.is_empty() && o.notes.is_empty(), "{o:?}");
}

#[test]
fn jump_host_notes_and_warnings_combine_in_linear_time() {
    // 200k lines skipped with a note or a warning each, read for the destination and the hop:
    // comparing every hop line with every destination line took minutes.
    let mut text = String::new();
    for _ in 0..100_000 {
        text.push_str("ForwardAgent yes\nUseKeychain yes\n");
    }
    let o = config_ok(&["-J", "j", "h"], &text);
    assert_eq!(o.notes.len(), 100_000);
    assert_eq!(o.warnings.len(), 100_000);
    assert_eq!(o.proxy_jump[0].options.notes.len(), 100_000);
}

/// Config files for the permission tests: `~/.ssh/config`, an included file, and a file for
/// `-F`, each with the given mode.
fn config_files(modes: [u32; 3]) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir(&ssh).unwrap();
    let files = [
        (
            ssh.join("config"),
            "Include extra.conf\nHost h\n    Port 1\n",
        ),
        (ssh.join("extra.conf"), "Host h\n    User included\n"),
        (home.path().join("alt"), "Include extra.conf\nPort 5\n"),
    ];
    for ((path, text), mode) in files.iter().zip(modes) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let [(config, _), (extra, _), (alt, _)] = files;
    (home, config, extra, alt)
}

fn at_home(home: &std::path::Path, args: &[&str]) -> Result<Options, String> {
    let env = Environment {
        home: Some(home.to_owned()),
        ..env()
    };
    match parse_args_with_env(args.iter().copied(), &env) {
        Ok(Command::Run(o)) => Ok(o),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn config_files_others_may_write_are_refused_as_ssh_does() {
    let (home, _, _, alt) = config_files([0o600, 0o644, 0o600]);
    let o = at_home(home.path(), &["h"]).unwrap();
    assert_eq!((o.port, o.user.as_str()), (1, "included"));
    for (modes, bad) in [
        ([0o664, 0o644, 0o600], "config"),
        ([0o600, 0o664, 0o600], "extra.conf"),
        ([0o602, 0o644, 0o600], "config"),
    ] {
        let (home, config, extra, _) = config_files(modes);
        let e = at_home(home.path(), &["h"]).unwrap_err();
        let path = if bad == "config" { config } else { extra };
        let path = path.display().to_string();
        assert!(
            e.contains(&format!("Bad owner or permissions on {path}")),
            "{modes:?}: {e}"
        );
        assert!(e.contains(&format!("chmod go-w {path}")), "{e}");
    }
    // As in ssh, the -F file itself is not checked, but what it includes is.
    let (home, _, _, alt_loose) = config_files([0o600, 0o644, 0o666]);
    let o = at_home(home.path(), &["-F", alt_loose.to_str().unwrap(), "h"]).unwrap();
    assert_eq!((o.port, o.user.as_str()), (5, "included"));
    let (home, _, extra, alt_bad) = config_files([0o600, 0o664, 0o600]);
    let e = at_home(home.path(), &["-F", alt_bad.to_str().unwrap(), "h"]).unwrap_err();
    assert!(
        e.contains(&format!("Bad owner or permissions on {}", extra.display())),
        "{e}"
    );
    drop(alt);
}

/// [`parse_args_with_config_text`] with these environment variables for `${VAR}`, instead of
/// the process's.
fn with_variables(
    args: &[&str],
    config: &str,
    variables: &[(&str, &str)],
) -> Result<Options, String> {
    let lookup = |name: &str| {
        variables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| std::ffi::OsString::from(v))
    };
    match scan(args.iter().map(|a| (*a).to_owned()).collect()).map_err(|e| e.to_string())? {
        Scanned::Run(parsed) => build(*parsed, &env(), &lookup, &ssh_config::Source::Text(config))
            .map_err(|e| e.to_string()),
        _ => panic!("{args:?} is not a run"),
    }
}

#[test]
fn environment_variables_in_key_known_hosts_certificate_and_agent_paths() {
    let vars = [
        ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ("KEYS", "/srv/keys"),
        ("ODD", "100%"),
    ];
    let text = "\
Host h
    IdentityAgent ${XDG_RUNTIME_DIR}/ssh-agent.socket
    IdentityFile ${KEYS}/%r_key
    CertificateFile ~/${ODD}/cert.pub
    UserKnownHostsFile ${KEYS}/known_hosts /kh/${ODD}
    PasswordFile /pw/${KEYS}
";
    let o = with_variables(&["h"], text, &vars).unwrap();
    assert_eq!(
        o.identity_agent,
        IdentityAgent::Path(PathBuf::from("/run/user/1000/ssh-agent.socket"))
    );
    assert_eq!(o.identity_files, [PathBuf::from("/srv/keys/tester_key")]);
    // A variable's value is taken as it is: no % token or ~ in it is expanded.
    assert_eq!(
        o.certificate_files,
        [PathBuf::from("/home/tester/100%/cert.pub")]
    );
    assert_eq!(
        o.user_known_hosts_files,
        [
            PathBuf::from("/srv/keys/known_hosts"),
            PathBuf::from("/kh/100%")
        ]
    );
    // Only those four take variables, as in ssh.
    assert_eq!(o.password_file, Some(PathBuf::from("/pw/${KEYS}")));
    // ${VAR} alone is a path too; $VAR alone is still read when the agent is asked.
    let o = with_variables(&["-o", "IdentityAgent=${KEYS}", "h"], "", &vars).unwrap();
    assert_eq!(
        o.identity_agent,
        IdentityAgent::Path(PathBuf::from("/srv/keys"))
    );
    let o = with_variables(&["-o", "IdentityAgent=$KEYS", "h"], "", &vars).unwrap();
    assert_eq!(o.identity_agent, IdentityAgent::Env("KEYS".into()));
    // An unset variable is an error naming it, wherever the setting came from.
    let e = with_variables(&["h"], text, &vars[1..]).unwrap_err();
    assert!(
        e.contains("'${XDG_RUNTIME_DIR}/ssh-agent.socket'")
            && e.contains("environment variable XDG_RUNTIME_DIR")
            && e.contains("not set"),
        "{e}"
    );
    let e = with_variables(&["-i", "${NOPE}/k", "h"], "", &vars).unwrap_err();
    assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
    let e = with_variables(&["-i", "${KEYS/k", "h"], "", &vars).unwrap_err();
    assert!(e.contains("no closing '}'"), "{e}");
    let e = with_variables(&["-i", "/k/${}", "h"], "", &vars).unwrap_err();
    assert!(e.contains("names no environment variable"), "{e}");
}

#[test]
fn permit_remote_open_limits_where_a_dynamic_remote_forward_connects() {
    use crate::remote::PermitRemoteOpen;
    let o = run(&["-R", "8022", "h"]);
    assert_eq!(o.permit_remote_open, PermitRemoteOpen::Any);
    assert_eq!(o.remote_forwards.len(), 1);
    assert_eq!(o.remote_forwards[0].to, Destination::Socks);
    let o = run(&[
        "-o",
        "PermitRemoteOpen db.internal:5432 [::1]:*",
        "-o",
        "PermitRemoteOpen=none",
        "-R",
        "127.0.0.1:0",
        "h",
    ]);
    // The first value wins, as every setting's does.
    assert_eq!(o.permit_remote_open.to_string(), "db.internal:5432 [::1]:*");
    assert!(o.permit_remote_open.allows("db.internal", 5432));
    assert!(!o.permit_remote_open.allows("db.internal", 22));
    let o = config_ok(
        &["db"],
        "Host db\n    PermitRemoteOpen none\n    RemoteForward 8022\n",
    );
    assert_eq!(o.permit_remote_open, PermitRemoteOpen::None);
    assert_eq!(o.remote_forwards[0].to, Destination::Socks);
    let e = err(&["-o", "PermitRemoteOpen=db", "h"]);
    assert!(
        e.starts_with("bad PermitRemoteOpen 'db': 'db' is not host:port; expected any, none"),
        "{e}"
    );
    let e = err(&["-o", "PermitRemoteOpen=any db:1", "h"]);
    assert!(e.contains("must be the only word"), "{e}");
}

#[test]
fn bind_address_is_taken_from_b_or_the_option_and_reaches_jump_hosts() {
    let o = run(&["-b", "203.0.113.7", "-o", "BindAddress=198.51.100.1", "h"]);
    assert_eq!(o.bind_address.as_deref(), Some("203.0.113.7"));
    let o = run(&["-b2001:db8::7", "h"]);
    assert_eq!(o.bind_address.as_deref(), Some("2001:db8::7"));
    assert_eq!(run(&["h"]).bind_address, None);
    let o = config_ok(&["db"], "Host db\n    BindAddress egress.example\n");
    assert_eq!(o.bind_address.as_deref(), Some("egress.example"));
    // -b applies to the first connection, which goes to the first jump host.
    let o = run(&["-b", "10.0.0.5", "-J", "jump", "h"]);
    assert_eq!(o.proxy_jump.len(), 1);
    assert_eq!(
        o.proxy_jump[0].options.bind_address.as_deref(),
        Some("10.0.0.5")
    );
    assert!(err(&["-b", "a b", "h"]).contains("a local address"));
    assert!(err(&["-o", "BindAddress=a b", "h"]).contains("a single value"));
    assert!(err(&["-b"]).contains("-b 203.0.113.7"));
}

#[test]
fn bind_interface_is_taken_from_capital_b_or_the_option_and_reaches_jump_hosts() {
    let o = run(&["-B", "eth1", "-o", "BindInterface=eth2", "h"]);
    assert_eq!(o.bind_interface.as_deref(), Some("eth1"));
    assert_eq!(o.bind_address, None);
    assert_eq!(
        run(&["-Bens5", "h"]).bind_interface.as_deref(),
        Some("ens5")
    );
    assert_eq!(run(&["h"]).bind_interface, None);
    let o = config_ok(&["db"], "Host db\n    BindInterface egress0\n");
    assert_eq!(o.bind_interface.as_deref(), Some("egress0"));
    // Both may be set; the connection code gives -b the precedence, as ssh does.
    let o = run(&["-B", "eth1", "-b", "10.0.0.5", "h"]);
    assert_eq!(o.bind_interface.as_deref(), Some("eth1"));
    assert_eq!(o.bind_address.as_deref(), Some("10.0.0.5"));
    let o = run(&["-B", "eth1", "-J", "jump", "h"]);
    assert_eq!(
        o.proxy_jump[0].options.bind_interface.as_deref(),
        Some("eth1")
    );
    for bad in ["", "a b", "eth0/1", "sixteen-letters!"] {
        let e = err(&["-B", bad, "h"]);
        assert!(e.contains("an interface's name"), "{bad:?}: {e}");
    }
    assert!(err(&["-o", "BindInterface=a b", "h"]).contains("a single value"));
    assert!(err(&["-B"]).contains("-B eth1"));
}

#[test]
fn connection_attempts_is_a_count_of_one_or_more() {
    assert_eq!(run(&["h"]).connection_attempts, 1);
    assert_eq!(
        run(&["-o", "ConnectionAttempts=5", "h"]).connection_attempts,
        5
    );
    for bad in ["0", "-1", "x", "+2"] {
        let e = err(&["-o", &format!("ConnectionAttempts={bad}"), "h"]);
        assert!(e.contains("1 or more"), "{bad}: {e}");
    }
}

#[test]
fn known_hosts_command_takes_an_absolute_program_and_arguments_with_tokens() {
    use crate::known_hosts::command::{KnownHostsCommand, Piece};
    let text = |t: &str| Piece::Text(t.to_owned());
    assert!(run(&["h"]).known_hosts_command.is_none(), "none by default");
    // The connection's tokens are replaced now; %H %I %t %f %K when it runs; %% is a %.
    let o = run(&[
        "-o",
        "KnownHostsCommand=/usr/local/bin/hostkeys --host=%H --for %I %t:%f \"key %K\" %h:%p %r 100%%",
        "-l",
        "dbuser",
        "-p",
        "2222",
        "bastion.example",
    ]);
    assert_eq!(
        o.known_hosts_command,
        Some(KnownHostsCommand {
            program: PathBuf::from("/usr/local/bin/hostkeys"),
            args: vec![
                vec![text("--host="), Piece::LookupName],
                vec![text("--for")],
                vec![Piece::Invocation],
                vec![Piece::KeyType, text(":"), Piece::Fingerprint],
                vec![text("key "), Piece::Key],
                vec![text("bastion.example:2222")],
                vec![text("dbuser")],
                vec![text("100%")],
            ],
        })
    );
    // From ssh_config, the first obtained wins, and none turns it off.
    let o = config_ok(
        &["h"],
        "Host h\n    KnownHostsCommand /first %H\n    KnownHostsCommand /second\n",
    );
    assert_eq!(
        o.known_hosts_command.map(|c| c.program),
        Some(PathBuf::from("/first"))
    );
    let o = config_ok(&["h"], "KnownHostsCommand none\nKnownHostsCommand /x\n");
    assert!(o.known_hosts_command.is_none());
    // As ssh: the program is not looked up in $PATH, nor is ~ expanded there.
    for relative in ["lookup %H", "~/bin/lookup", "./lookup"] {
        let e = err(&["-o", &format!("KnownHostsCommand={relative}"), "h"]);
        assert!(e.contains("absolute path"), "{relative}: {e}");
    }
    // A token that means nothing is an error naming it, and the runtime ones.
    let e = err(&["-o", "KnownHostsCommand=/x %Q", "h"]);
    assert!(
        e.contains("unknown token '%Q'") && e.contains("%H, %I, %t, %f, %K"),
        "{e}"
    );
    // Runtime tokens mean nothing in paths.
    let e = err(&["-o", "UserKnownHostsFile=/kh/%H", "h"]);
    assert!(e.contains("unknown token '%H'") && !e.contains("%K"), "{e}");
}

#[test]
fn known_hosts_command_arguments_take_environment_variables() {
    let o = with_variables(
        &["-o", "KnownHostsCommand=/bin/lookup ${VAULT_PATH}/%H", "h"],
        "",
        &[("VAULT_PATH", "secret/bastions")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    use crate::known_hosts::command::Piece;
    assert_eq!(
        o.known_hosts_command.map(|c| c.args),
        Some(vec![vec![
            Piece::Text("secret/bastions/".into()),
            Piece::LookupName
        ]])
    );
}

#[test]
fn f_and_fork_after_authentication_go_to_the_background_and_f_wins() {
    assert!(!run(&["h"]).fork_after_authentication);
    assert!(run(&["-f", "-N", "h"]).fork_after_authentication);
    assert!(run(&["-fNL", "1:h:2", "h"]).fork_after_authentication);
    assert!(run(&["-o", "ForkAfterAuthentication=yes", "h"]).fork_after_authentication);
    // As in ssh, -f sets it whatever -o or the file say.
    assert!(run(&["-o", "ForkAfterAuthentication=no", "-f", "h"]).fork_after_authentication);
    assert!(config_ok(&["-f", "h"], "ForkAfterAuthentication no\n").fork_after_authentication);
    assert!(
        config_ok(&["h"], "Host h\n    ForkAfterAuthentication yes\n").fork_after_authentication
    );
    assert!(err(&["-o", "ForkAfterAuthentication=maybe", "h"]).contains("ForkAfterAuthentication"));
}

#[test]
fn e_names_the_log_file_and_the_last_one_wins() {
    assert_eq!(run(&["h"]).log_file, None);
    assert_eq!(
        run(&["-E", "/var/log/a.log", "-E/var/log/b.log", "h"]).log_file,
        Some(PathBuf::from("/var/log/b.log"))
    );
    assert!(err(&["h", "-E"]).contains("-E /var/log/forwarder.log"));
}

#[test]
fn g_prints_the_resolved_settings_in_ssh_s_form() {
    assert!(!run(&["h"]).print_config);
    let o = run(&[
        "-G",
        "-p",
        "2222",
        "-L",
        "127.0.0.1:15432:db:5432",
        "-D",
        "1080",
        "-o",
        "StreamLocalBindMask=0077",
        "-o",
        "RekeyLimit=1G 1h",
        "-o",
        "KnownHostsCommand=/bin/keys %H 100%%",
        "alice@bastion",
    ]);
    assert!(o.print_config);
    let text = super::show::config_text(&o).unwrap_or_else(|e| panic!("{e}"));
    for line in [
        "host bastion\nuser alice\nhostname bastion\nport 2222\n",
        "\nlocalforward [127.0.0.1]:15432 [db]:5432\n",
        "\ndynamicforward 1080\n",
        "\nstreamlocalbindmask 077\n",
        "\nrekeylimit 1073741824 3600\n",
        "\nknownhostscommand /bin/keys %H 100%%\n",
        "\nstricthostkeychecking true\n",
        "\nserveraliveinterval 15\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

#[test]
fn control_master_path_and_command_are_read_as_ssh_reads_them() {
    let o = run(&["h"]);
    assert_eq!(o.control_master, ControlMaster::No);
    assert_eq!(o.control_path, None);
    assert_eq!(o.control_command, None);
    // -M wins over ControlMaster; -S is expanded as ssh expands ControlPath.
    let o = run(&[
        "-M",
        "-o",
        "ControlMaster=no",
        "-S",
        "/run/cm-%r@%h:%p",
        "-p",
        "2222",
        "-l",
        "u",
        "db",
    ]);
    assert_eq!(o.control_master, ControlMaster::Yes);
    assert_eq!(o.control_path, Some(PathBuf::from("/run/cm-u@db:2222")));
    let o = run(&[
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPath=/run/a",
        "-S",
        "/run/b",
        "h",
    ]);
    assert_eq!(o.control_master, ControlMaster::Auto);
    assert_eq!(o.control_path, Some(PathBuf::from("/run/b")));
    let o = config_ok(
        &["db"],
        "Host db\n    ControlMaster yes\n    ControlPath none\n",
    );
    assert_eq!(o.control_master, ControlMaster::Yes);
    assert_eq!(o.control_path, None);
    let o = run(&["-S", "/run/cm", "-O", "exit", "h"]);
    assert_eq!(o.control_command, Some(crate::mux::ControlCommand::Exit));
    assert_eq!(
        run(&["-Ocheck", "h"]).control_command,
        Some(crate::mux::ControlCommand::Check)
    );
    // What forwarder does not do, said so.
    assert!(err(&["-MM", "h"]).contains("ssh-askpass"));
    assert!(err(&["-o", "ControlMaster=autoask", "h"]).contains("ssh-askpass"));
    assert!(err(&["-o", "ControlMaster=maybe", "h"]).contains("yes, no or auto"));
    let o = run(&["-S", "/run/cm", "-O", "forward", "-L", "5433:db:5432", "h"]);
    assert_eq!(o.control_command, Some(crate::mux::ControlCommand::Forward));
    assert_eq!(o.local_forwards.len(), 1);
    assert_eq!(
        run(&["-O", "cancel", "-D", "1080", "h"]).control_command,
        Some(crate::mux::ControlCommand::Cancel)
    );
    assert!(err(&["-O", "proxy", "h"]).contains("no proxy mode"));
    assert!(err(&["-O", "bogus", "h"]).contains("check, exit, stop, forward or cancel"));
    assert!(err(&["-O", "exit", "-O", "check", "h"]).contains("a single -O"));
    assert!(err(&["-S"]).contains("-S ~/.ssh/cm-%C"));
    assert!(err(&["-S", "/run/%z", "h"]).contains("%z"));
}

#[test]
fn control_persist_reads_as_ssh_reads_it() {
    assert_eq!(run(&["h"]).control_persist, ControlPersist::No);
    for (value, expected) in [
        ("no", ControlPersist::No),
        ("false", ControlPersist::No),
        ("yes", ControlPersist::Forever),
        ("true", ControlPersist::Forever),
        ("0", ControlPersist::Forever),
        ("600", ControlPersist::Idle(Duration::from_secs(600))),
        ("10m", ControlPersist::Idle(Duration::from_secs(600))),
        ("1h30m", ControlPersist::Idle(Duration::from_secs(5400))),
    ] {
        let o = run(&["-o", &format!("ControlPersist={value}"), "h"]);
        assert_eq!(o.control_persist, expected, "{value}");
    }
    // The first value wins, as in ssh_config.
    let o = run(&["-o", "ControlPersist=5", "-o", "ControlPersist=no", "h"]);
    assert_eq!(
        o.control_persist,
        ControlPersist::Idle(Duration::from_secs(5))
    );
    for bad in ["sometimes", "10x", "-1", ""] {
        let e = err(&["-o", &format!("ControlPersist={bad}"), "h"]);
        assert!(e.contains("ControlPersist"), "{bad}: {e}");
    }
}
